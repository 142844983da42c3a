-- lib/event_runner.lua: the lifecycle of world events, with no clock and no I/O of its own, so
-- that a spec can run a day of game time in milliseconds.
--
--   local runner = event_runner.new {
--       kinds = { invasion = require "world_events.invasion", ... },
--       now = function() return seconds end,       -- the game clock (epoch seconds)
--       broadcast = function(region, msg) end,      -- to the players of a region
--       save = function(ev) end,                    -- persist ev (state, data, times)
--       log = function(msg, fields) end,            -- optional
--   }
--   runner:add(ev)          ev = {id, type, region, params, state, starts_at, ends_at, data}
--   runner:tick(dt)         scheduled -> active at starts_at; on_tick while active; ended at
--                           ends_at or when the kind calls ctx.finish
--   runner:action(region, player, action)   a player's action to the active events there
--   runner:list()           every event it holds
--   runner:cancel(id)       end it now (reason "cancelled"); runner:drop(id) let go of it
--
-- A kind (scripts/world_events/<type>.lua) is a table of hooks, all optional but on_start:
--   validate(params) -> true | nil, message      (before an event is created)
--   duration(params) -> seconds                  (default: params.duration_s or DEFAULT)
--   on_start(ev, ctx)   on_tick(ev, ctx, dt)   on_player_action(ev, ctx, player, action)
--   on_end(ev, ctx, reason)                      reason: "time" | "finished" | "cancelled"
-- ev.data is the kind's own state: plain values only, saved with the event, so an event
-- resumes where it was after a restart. ctx = {now, region, broadcast(msg), finish(result),
-- random(m, n)}. A hook that raises is logged, and the event ends (reason "error"): one broken
-- event never stops the others or the tick.
local pairs = pairs
local pcall = pcall
local setmetatable = setmetatable
local tostring = tostring


local _M = {}

_M.DEFAULT_DURATION = 600


local Runner = {}
Runner.__index = Runner


function _M.new(opts)
    return setmetatable({
        kinds = opts.kinds, now = opts.now, bcast = opts.broadcast, save = opts.save,
        log = opts.log or function() end, random = opts.random or math.random,
        events = opts.events or {}, -- id -> ev (a table that outlives reloads: mmo.state)
    }, Runner)
end


-- The world_event message of API.md: {t = "world_event", event = {...}}.
function _M.message(ev)
    return { t = "world_event", event = {
        id = ev.id, type = ev.type, region = ev.region, state = ev.state,
        starts_at = ev.starts_at, ends_at = ev.ends_at, data = ev.data, result = ev.result,
    } }
end


-- The next start of a schedule entry after `now` (epoch seconds): the first t > now with
-- (t - offset_s) a multiple of every_s.
function _M.next_start(entry, now)
    local offset = entry.offset_s or 0
    return math.floor((now - offset) / entry.every_s + 1) * entry.every_s + offset
end


function _M.duration(kind, params)
    if kind.duration then
        return kind.duration(params)
    end
    return (params and params.duration_s) or _M.DEFAULT_DURATION
end


local function ctx_of(self, ev)
    return {
        now = self.now(),
        region = ev.region,
        random = self.random,
        broadcast = function(msg)
            self.bcast(ev.region, msg)
        end,
        finish = function(result)
            ev.finishing = true
            ev.result = result
        end,
    }
end


-- Run a hook; false when it raised (logged).
local function call(self, ev, hook, ...)
    local kind = self.kinds[ev.type]
    local fn = kind and kind[hook]
    if not fn then
        return true
    end
    local ok, err = pcall(fn, ev, ctx_of(self, ev), ...)
    if not ok then
        self.log("world event hook failed", { event = ev.id, type = ev.type, hook = hook,
                                              error = tostring(err) })
    end
    return ok
end


local function finish(self, ev, reason)
    if ev.state == "ended" then
        return
    end
    if reason ~= "error" then
        call(self, ev, "on_end", reason)
    end
    ev.state, ev.end_reason, ev.finishing = "ended", reason, nil
    ev.ended_at = self.now()
    self.save(ev)
    self.bcast(ev.region, _M.message(ev))
    self.events[ev.id] = nil
end


local function start(self, ev)
    ev.state = "active"
    ev.data = ev.data or {}
    if not call(self, ev, "on_start") then
        return finish(self, ev, "error")
    end
    self.save(ev)
    self.bcast(ev.region, _M.message(ev))
end


-- Hold ev (new, or read back after a restart). An active event is not started again: its
-- data is where it was.
function Runner:add(ev)
    if ev.state == "ended" then
        return
    end
    ev.data = ev.data or {}
    self.events[ev.id] = ev
end


function Runner:tick(dt)
    local now = self.now()
    for _, ev in pairs(self.events) do
        if ev.state == "scheduled" and now >= ev.starts_at then
            start(self, ev)
        end
        if ev.state == "active" then
            if ev.finishing then
                finish(self, ev, "finished")
            elseif now >= ev.ends_at then
                finish(self, ev, "time")
            elseif not call(self, ev, "on_tick", dt) then
                finish(self, ev, "error")
            elseif ev.finishing then
                finish(self, ev, "finished")
            end
        end
    end
end


-- A player's action reaches the active events of the region: how many took it.
function Runner:action(region, player, action)
    local n = 0
    for _, ev in pairs(self.events) do
        if ev.region == region and ev.state == "active" then
            if not call(self, ev, "on_player_action", player, action) then
                finish(self, ev, "error")
            else
                n = n + 1
                if ev.finishing then
                    finish(self, ev, "finished")
                end
            end
        end
    end
    return n
end


function Runner:cancel(id)
    local ev = self.events[id]
    if ev then
        finish(self, ev, "cancelled")
        return true
    end
    return false
end


-- Let go of an event without ending it (its region has another owner now).
function Runner:drop(id)
    self.events[id] = nil
end


function Runner:get(id)
    return self.events[id]
end


function Runner:list()
    local out = {}
    for _, ev in pairs(self.events) do
        out[#out + 1] = ev
    end
    table.sort(out, function(a, b) return a.id < b.id end)
    return out
end


return _M
